"""Carnet's benchmarks (`make bench`, `python -m bench`).

Each figure is printed next to a floor measured in the same run: a bare Twisted resource
(`bench.floor`) that parses the same request with lxml and returns a canned response.
"""
