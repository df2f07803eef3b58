"""Built-in providers, registered through the ``elevenfactor.providers`` entry points."""
