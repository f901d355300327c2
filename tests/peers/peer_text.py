"""What the Python peers (tls_client.py, tls_server.py) share: the peer certificate in words."""


def subject_text(cert):
    """'CN=alice' from getpeercert()'s nested tuples."""
    parts = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            parts.append(("CN" if key == "commonName" else key) + "=" + value)
    return ",".join(parts)
