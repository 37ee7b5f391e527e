"""The study: grid expansion, results store, runner."""
