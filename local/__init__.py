"""The local stack: the whole service on 127.0.0.1 with an AWS emulator, no AWS account, no Docker."""
