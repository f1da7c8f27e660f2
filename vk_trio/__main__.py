from vk_trio.cli import main

main()
