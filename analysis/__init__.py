"""interp-workbench analysis layer: importable without Streamlit.

The dashboard (``app/``), the CLI (``analysis.cli``) and notebooks call the same
functions here, so all three get the same numbers.
"""

__version__ = "0.1.0"
