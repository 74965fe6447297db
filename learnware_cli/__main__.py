from learnware_cli.cli.app import entry

entry()
