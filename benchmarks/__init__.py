"""Programs that regenerate the figures under docs/ (results report, speed and padding benchmarks).

Run them as scripts (``python benchmarks/report.py``); the modules beside them are their stages.
"""
