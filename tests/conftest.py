import os
import sys

# Fixture-plugin builders live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))
