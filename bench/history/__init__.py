"""The history benchmark (issue 6): `python -m bench.history`. See bench/history/README.md."""

__all__: list[str] = []
