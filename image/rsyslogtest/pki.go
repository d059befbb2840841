package rsyslogtest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a CA made for one test (or lab run), a server certificate and a client
// certificate signed by it, as PEM files.
type PKI struct {
	CA                     string
	ServerCert, ServerKey  string // for the server name, 127.0.0.1 and the extra addresses
	ClientCert, ClientKey  string // CN ClientName, for inputs that require client certificates
	ServerName, ClientName string
}

// ClientName is the common name of the client certificate.
const ClientName = "domainm-client"

// MakePKI writes a fresh CA (valid from an hour ago for two days), a server
// certificate for serverName, 127.0.0.1 and ips, and a client certificate into dir.
// It returns an error rather than failing a test, so that the lab (a program) makes
// its receiver's certificates the same way.
func MakePKI(dir, serverName string, ips ...net.IP) (PKI, error) {
	p := PKI{CA: filepath.Join(dir, "ca.pem"), ServerName: serverName, ClientName: ClientName}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return p, err
	}
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Domain M test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return p, fmt.Errorf("test CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return p, err
	}
	if err := writePEM(p.CA, "CERTIFICATE", caDER); err != nil {
		return p, err
	}
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (cert, key string, err error) {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return "", "", err
		}
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(48 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			DNSNames: []string{name}, IPAddresses: append([]net.IP{net.IPv4(127, 0, 0, 1)}, ips...)}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &k.PublicKey, caKey)
		if err != nil {
			return "", "", fmt.Errorf("certificate for %s: %w", name, err)
		}
		kder, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return "", "", err
		}
		cert, key = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+"-key.pem")
		if err := writePEM(cert, "CERTIFICATE", der); err != nil {
			return "", "", err
		}
		return cert, key, writePEM(key, "PRIVATE KEY", kder)
	}
	if p.ServerCert, p.ServerKey, err = leaf(serverName, 2, x509.ExtKeyUsageServerAuth); err != nil {
		return p, err
	}
	p.ClientCert, p.ClientKey, err = leaf(ClientName, 3, x509.ExtKeyUsageClientAuth)
	return p, err
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
