"""The check engine: spec -> execute(spec) -> CheckResult; torch is loaded only when a check runs
(never by --help or bad input). It prints nothing and reads no flags."""
