"""The paper's figures as experiments: ``fedopt experiment fig2|fig3|fig4|fig5``.

Each ``run_figN(cfg, out, backend=..., seeds=..., progress=...)`` writes CSV, PNG, a markdown
table, summary.json and the resolved config.yaml into ``out/figN/`` and returns the summary.
"""

__all__ = ["FIGURES"]

FIGURES = ("fig2", "fig3", "fig4", "fig5")
