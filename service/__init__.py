"""wechat-survey: the backend of a WeChat Official Account, on Tornado and MongoDB."""

__version__ = "0.1.0"
