package imapd

import (
	"github.com/emersion/go-imap/v2"
)

// loginServer is the server side of the obsolete but widely used SASL
// LOGIN mechanism (draft-murchison-sasl-login): the server asks for the
// user name, then the password. go-sasl has only its client side. A client
// may send the user name as an initial response (SASL-IR).
type loginServer struct {
	login    func(username, password string) error
	step     int
	username string
}

func newLoginServer(login func(username, password string) error) *loginServer {
	return &loginServer{login: login}
}

// Maximum length of a user name or password; longer ones are refused
// before any backend sees them.
const maxCredential = 1024

func (l *loginServer) Next(response []byte) (challenge []byte, done bool, err error) {
	if len(response) > maxCredential {
		return nil, false, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Credential too long"}
	}
	switch l.step {
	case 0:
		l.step = 1
		if len(response) == 0 {
			return []byte("Username:"), false, nil
		}
		fallthrough // initial response carries the user name
	case 1:
		l.username = string(response)
		l.step = 2
		return []byte("Password:"), false, nil
	case 2:
		l.step = 3
		return nil, true, l.login(l.username, string(response))
	}
	return nil, false, &imap.Error{Type: imap.StatusResponseTypeBad, Text: "Unexpected SASL response"}
}
