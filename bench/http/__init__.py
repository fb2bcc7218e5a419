"""The HTTP face's benchmark (issue 14): `python -m bench.http`."""
