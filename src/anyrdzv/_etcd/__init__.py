"""etcd v3, through its JSON gateway, from the bottom up: the wire format (``_wire``,
pure); the HTTP transport and its one error map (``_transport``); the members and
failover (``_members``); logins (``_auth``); request slots (``_slots``); the gateway's
attempts (``_gateway``); keep-alive requests and their race (``_renew``) and batching
(``_keepalive``); the watch (``_watch``); endpoints (``_endpoints``), status reports
(``_status``), requests (``_requests``) and answers (``_convert``) of the
:class:`EtcdStore` facade (``_store``); and TLS contexts from files (``_tls``)."""
