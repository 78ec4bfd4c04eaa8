"""Serverless Mail Proxy: the code shared by every function (deployed as a Lambda layer)."""
