"""The status page benchmark (issue 15): see bench/page/README.md."""
