"""The benchmark is not a test suite: pytest collects nothing here (run ``make bench``)."""

collect_ignore_glob = ["*"]
