"""docker/ci.py's steps, one module each, in the order it runs them (its docstring lists them).

docker/ci.py puts docker/ on sys.path, so these import as `ci_steps.<module>`."""
