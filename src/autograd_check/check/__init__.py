"""The check itself: spec → execute(spec) → CheckResult; torch is loaded only when a check runs."""
