from inbedder.cli import main

main()
