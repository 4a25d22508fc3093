"""Entry point of the bundled app: the same command line as ``sorce-desktop`` (no command opens the window).

Two extra switches exist only here, for checking a built bundle (packaging/smoke_test.py uses them):
    sorce-desktop --bundle-check [--json] [--photo JPG]   frozen-app path checks (resources, SSL CA, multiprocessing,
                                                      thread pools, Qt plugins, optional pieces)
    sorce-desktop --smoke-test [--data-dir DIR]        open the real window, report when it is shown, then quit
"""

import multiprocessing
import sys


def main() -> int:
    # First thing: a spawned multiprocessing child re-runs this executable and must stop here.
    multiprocessing.freeze_support()
    argv = sys.argv[1:]
    if argv[:1] == ["--bundle-check"]:
        import bundle_check

        return bundle_check.main(argv[1:])
    if argv[:1] == ["--smoke-test"]:
        import bundle_check

        return bundle_check.smoke_window(argv[1:])
    from sorce_desktop.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
