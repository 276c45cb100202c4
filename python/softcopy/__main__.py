from softcopy.cli import entry

entry()
