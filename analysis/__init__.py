"""The read side that studies zoos: verify, phase plots, studies, Ray Tune export and import.

`analysis` imports `zoo` and `loaders`, never `generators`.
"""
