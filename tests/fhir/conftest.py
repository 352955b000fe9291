from tests.reporting_fixtures import *  # noqa: F401,F403  (shared fixtures)
