"""HTTP handlers for what WeChat calls: the ``/wechat`` endpoint."""
