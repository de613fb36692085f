"""Promptfoo's test cases for promptfooconfig.yaml: notebook 07's test tickets, from ftkit.

Promptfoo calls ``generate_tests`` with the Python in ``PROMPTFOO_PYTHON`` (one that imports
ftkit: the course's environment); see https://www.promptfoo.dev/docs/integrations/python/.
"""

from ftkit.promptfoo import test_cases


def generate_tests(config=None):
    """One test case per test ticket (24 in quick mode, all 101 otherwise): ``vars`` = the system
    prompt, the ticket and its right ``category``, ``urgency``, ``product``."""
    return test_cases()
