"""What the tests and benchmarks share: servers, models, engines, the CLI, load, and the rule
for tests that cannot run here (``ci``). Test modules import from here, never from each other."""
