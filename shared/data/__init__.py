"""Puzzle datasets: the on-disk format, the batch iterators, and the builders."""
