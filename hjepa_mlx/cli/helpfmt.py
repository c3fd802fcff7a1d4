"""`--help` that shows every default: argparse's own defaults formatter, minus the noise of
'(default: None)' / '(default: False)' on options whose help already says what happens without them."""

import argparse


class DefaultsFormatter(argparse.ArgumentDefaultsHelpFormatter):
    def _get_help_string(self, action):
        text = action.help or ""
        quiet = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if "default" in text or quiet or not action.option_strings:
            return text
        return super()._get_help_string(action)
