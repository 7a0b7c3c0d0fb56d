package pop3d

import (
	"bytes"
	"encoding/base64"
	"errors"
	"unicode/utf8"
)

// SASL errors; their texts reach the client.
var (
	errSASLCancelled = errors.New("cancelled")
	errSASLBase64    = errors.New("invalid base64 in response")
	errSASLSyntax    = errors.New("malformed response")
	errSASLTooLong   = errors.New("response too long")
	errSASLAuthzid   = errors.New("authorization identity differs from the login name")
	errSASLMech      = errors.New("unsupported mechanism")
)

// isSASLError tells the exchange's own errors from I/O errors.
func isSASLError(err error) bool {
	for _, e := range []error{errSASLCancelled, errSASLBase64, errSASLSyntax, errSASLTooLong, errSASLAuthzid, errSASLMech} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// runSASL runs the server side of an RFC 5034 exchange for mech with the
// optional initial response. ask sends a challenge and returns the
// client's next response line.
func runSASL(mech, initial string, hasInitial bool, ask func(challenge []byte) (string, error)) (user, pass string, err error) {
	server := newSASLServer(mech)
	if server == nil {
		return "", "", errSASLMech
	}
	var resp []byte
	if hasInitial {
		if resp, err = decodeResponse(initial); err != nil {
			return "", "", err
		}
	}
	for {
		challenge, done, err := server.next(resp)
		if err != nil {
			return "", "", err
		}
		if done {
			user, pass = server.credentials()
			return user, pass, nil
		}
		line, err := ask(challenge)
		if err != nil {
			return "", "", err
		}
		if resp, err = decodeResponse(line); err != nil {
			return "", "", err
		}
	}
}

// saslServer is one server-side SASL exchange for a password mechanism.
type saslServer interface {
	// next takes the client's decoded response (nil before the first one
	// when there was no initial response) and returns the next challenge,
	// or done when the credentials are complete.
	next(resp []byte) (challenge []byte, done bool, err error)
	// credentials returns the login name and password once done.
	credentials() (user, pass string)
}

// newSASLServer returns a server for mech (upper case), or nil.
func newSASLServer(mech string) saslServer {
	switch mech {
	case "PLAIN":
		return &plainServer{}
	case "LOGIN":
		return &loginServer{}
	}
	return nil
}

// decodeResponse decodes one client response line (RFC 5034 section 4):
// "*" cancels, "=" is an empty initial response, anything else is base64.
func decodeResponse(line string) ([]byte, error) {
	switch line {
	case "*":
		return nil, errSASLCancelled
	case "=":
		return []byte{}, nil
	}
	b, err := base64.StdEncoding.DecodeString(line)
	if err != nil {
		return nil, errSASLBase64
	}
	return b, nil
}

// plainServer is RFC 4616 PLAIN: [authzid] NUL authcid NUL passwd.
type plainServer struct {
	asked      bool
	user, pass string
}

func (p *plainServer) next(resp []byte) ([]byte, bool, error) {
	if resp == nil {
		if p.asked {
			return nil, false, errSASLSyntax
		}
		p.asked = true
		return []byte{}, false, nil
	}
	authzid, user, pass, err := parsePlain(resp)
	if err != nil {
		return nil, false, err
	}
	if authzid != "" && authzid != user {
		return nil, false, errSASLAuthzid
	}
	p.user, p.pass = user, pass
	return nil, true, nil
}

func (p *plainServer) credentials() (string, string) { return p.user, p.pass }

// parsePlain splits a PLAIN message; every part must be UTF-8 without NUL,
// and authcid and passwd must not be empty (RFC 4616 section 2).
func parsePlain(b []byte) (authzid, user, pass string, err error) {
	parts := bytes.Split(b, []byte{0})
	if len(parts) != 3 || len(parts[1]) == 0 || len(parts[2]) == 0 {
		return "", "", "", errSASLSyntax
	}
	for _, p := range parts {
		if len(p) > 255 || !utf8.Valid(p) {
			return "", "", "", errSASLSyntax
		}
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), nil
}

// loginServer is the LOGIN mechanism (draft-murchison-sasl-login): the
// server asks "Username:" then "Password:"; an initial response is the user
// name.
type loginServer struct {
	step       int
	user, pass string
}

func (l *loginServer) next(resp []byte) ([]byte, bool, error) {
	if resp != nil && (len(resp) > 255 || !utf8.Valid(resp) || bytes.IndexByte(resp, 0) >= 0) {
		return nil, false, errSASLSyntax
	}
	switch l.step {
	case 0:
		l.step = 1
		if resp == nil {
			return []byte("Username:"), false, nil
		}
		fallthrough
	case 1:
		if len(resp) == 0 {
			return nil, false, errSASLSyntax
		}
		l.user, l.step = string(resp), 2
		return []byte("Password:"), false, nil
	case 2:
		if len(resp) == 0 {
			return nil, false, errSASLSyntax
		}
		l.pass, l.step = string(resp), 3
		return nil, true, nil
	}
	return nil, false, errSASLSyntax
}

func (l *loginServer) credentials() (string, string) { return l.user, l.pass }
