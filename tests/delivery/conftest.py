from tests.reporting_fixtures import *
