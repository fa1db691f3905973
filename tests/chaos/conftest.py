"""The fault runs are not a test suite: pytest collects nothing here (run ``make chaos``)."""

collect_ignore_glob = ["*"]
