pytest_plugins = [
    "tests.fixtures_controlplane",
    "tests.fixtures_postgres",
    "tests.fixtures_operator",
]
