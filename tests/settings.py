"""Settings for the test process: the demo project's, with fast password hashing.

conftest.py sets ``REDIS_URL`` and ``TESTPROJECT_DB`` before Django starts,
so this process and the daphne subprocesses share Redis and the database.
"""

from testproject.settings import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
