"""healthmon's benchmark suite (issue 4): `python -m bench`. See bench/README.md."""

__all__: list[str] = []
