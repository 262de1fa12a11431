"""etcd v3, through its JSON gateway: the wire format (pure), the gateway client (HTTP,
slots, auth, retries), the keep-alive batcher, and the :class:`EtcdStore` facade."""
