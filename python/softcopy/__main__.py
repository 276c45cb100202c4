from softcopy.cli import main

main()
