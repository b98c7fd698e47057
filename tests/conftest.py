import os
import sys

# Fixture-plugin builders live beside the tests.
sys.path.insert(0, os.path.dirname(__file__))


def pytest_collection_modifyitems(config, items):
    """In tox's ``all`` env, run the registry walks of ``tests/test_*.py`` on the plugins' names only.

    tox's ``all`` env reruns the core's registry-wide test files so that every
    plugin's optimizers and transforms get walked too. Their cases for the core's
    own names already ran in the ``core`` env, with the same factories (a name a
    plugin shadows would resolve otherwise, and is then not the core's row), so
    they are deselected here: several minutes of CI. Tests without a registered
    name among their parameters, and every other directory, run unchanged.
    """
    if os.environ.get("OPTCORE_TEST_ENV") != "all":
        return
    import optcore

    rows = optcore.available()
    registered = {row.name for row in rows}
    core_names = {row.name for row in rows if row.distribution == "optcore"}
    core_names -= {row.name for row in rows if row.distribution != "optcore"}
    here = os.path.dirname(os.path.abspath(__file__))

    def walks_only_core_names(item) -> bool:
        if os.path.dirname(str(item.path)) != here or not hasattr(item, "callspec"):
            return False
        values = [getattr(value, "name", value) for value in item.callspec.params.values()]
        names = {name for name in values if isinstance(name, str) and name in registered}
        return bool(names) and names <= core_names

    deselected = [item for item in items if walks_only_core_names(item)]
    if deselected:
        items[:] = [item for item in items if not walks_only_core_names(item)]
        config.hook.pytest_deselected(items=deselected)
