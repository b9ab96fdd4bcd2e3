"""s2sr.deploy: the openEO process graph / user-defined process and its registration."""
