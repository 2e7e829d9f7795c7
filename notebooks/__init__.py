"""The chapter's notebooks; notebooks.execute runs them (python notebooks/execute.py NB.ipynb)."""
