//! Certificate inspection: certificates from files (PEM, DER, PKCS#12) and from remote servers.
