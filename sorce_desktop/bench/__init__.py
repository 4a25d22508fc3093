"""Benchmarks behind `sorce-desktop bench ...` (registered in cli.BENCHES)."""


def remember_folder(lib, folder) -> str:
    """Remember a folder in a benchmark's own library, straight in its store (a benchmark sets up the
    library it measures; the application adds folders as jobs of the indexing service, through
    LibraryController.add_folder)."""
    from sorce_desktop.core.indexing.scanner import existing_folder

    return lib.store.add_folder(existing_folder(folder))
