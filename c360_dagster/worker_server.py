"""The first module the worker server imports (`runner.WORKER_PRELOAD`): Dagster's unused parts
are left unimported (`deferred_imports`) before it imports the asset graph, as in a c360 process."""

from c360_dagster import deferred_imports

deferred_imports.install()
