"""What the scripted servers (pop3script.py, imapscript.py, smtpscript.py)
share: a listener on a free port of 127.0.0.1, one thread per connection,
the sessions recorded, faults picked per session, stop() that ends every
connection and thread, and the base of their connection classes (Conn:
line reading, closing with or without a TCP RST).

A subclass sets SESSION (its Session class, made with the session's number;
or overrides _new_session) and CONN (its connection class, a Conn:
CONN(server, sock, session).run(), which raises Closed or OSError when the
peer goes), FAULT_KEY (the fault field naming the command or step) and
ACTIONS (the fault actions it knows), and calls ScriptServer.__init__(self,
t) once its own fields are set: the listener starts accepting at once.
Hooks a subclass may override: _fault_matches (faults with more fields
than the name), _conn_error, _ended."""

import copy
import socket
import struct
import threading
import time


class Closed(Exception):
    """The connection ended (either side); the session is over."""


def shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class Conn:
    """One connection of a scripted server: sock (replaced by its TLS
    wrapper when a subclass starts TLS), rfile, the server and the
    session."""
    LINE_MAX = 1 << 20

    def __init__(self, srv, sock, s):
        self.srv, self.sock, self.s = srv, sock, s
        self.rfile = sock.makefile('rb')

    def readline(self):
        """The next line without its CRLF (str, surrogate-escaped);
        Closed at end of stream."""
        line = self.rfile.readline(self.LINE_MAX)
        if not line:
            raise Closed()
        return line.rstrip(b'\r\n').decode('utf-8', 'surrogateescape')

    def close(self, reset=False):
        """Ends the session (raises Closed); reset=True closes the socket
        at once with a TCP RST (SO_LINGER 0) rather than a FIN."""
        if reset:   # the fd must really close now, before any shutdown (a FIN)
            self.rfile.close()
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            self.sock.close()
        raise Closed()

    def finish(self):
        shutdown(self.sock)
        self.rfile.close()
        self.sock.close()


class Listener:
    """A listener on a free port of 127.0.0.1 whose accept loop runs in a
    thread and hands each connection to _accepted(sock) (in that thread);
    _spawn starts more threads; stop() ends every socket in _conns (by
    _end_conn: shutdown), joins the threads, closes the listener. Also
    the base of tests/integration/cutproxy.py."""
    BACKLOG = 16

    def __init__(self, t):
        self._lock = threading.Lock()
        self._conns = set()
        self._stopping = threading.Event()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(('127.0.0.1', 0))
        self._listener.listen(self.BACKLOG)
        self._listener.settimeout(0.2)
        self.host, self.port = self._listener.getsockname()
        self._threads = []
        self._spawn(self._accept_loop)
        if t is not None:
            t.cleanup(self.stop)

    def stop(self):
        self._stopping.set()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            self._end_conn(c)
        for th in list(self._threads):
            th.join(10)
        self._listener.close()

    def _end_conn(self, sock):
        shutdown(sock)

    def _spawn(self, fn, *args):
        th = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(th)
        th.start()

    def _accept_loop(self):
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._accepted(conn)

    def _accepted(self, conn):
        raise NotImplementedError


class ScriptServer(Listener):
    SESSION = None
    CONN = None
    FAULT_KEY = 'command'
    ACTIONS = ()

    def __init__(self, t):
        self._faults = []
        self._sessions = []
        Listener.__init__(self, t)

    def fault(self, name, reply=None, action=None, session=None, times=None, **fields):
        """When command or step name comes (in the sessions numbered in
        session, an int or several; every session if None), answer with
        reply, or do action (one of ACTIONS); times: how often (None:
        always). fields: more of the fault, for the subclass's
        _fault_matches and actions."""
        if (reply is None) == (action is None):
            raise ValueError('fault: give exactly one of reply= and action=')
        if action is not None and action not in self.ACTIONS:
            raise ValueError('fault: unknown action %r' % action)
        if isinstance(session, int):
            session = (session,)
        with self._lock:
            self._faults.append(dict(fields, **{
                self.FAULT_KEY: name.upper(), 'reply': reply, 'action': action,
                'left': times, 'sessions': None if session is None else set(session)}))

    def clear_faults(self):
        with self._lock:
            self._faults = []

    def sessions(self, wait=5.0):
        """Copies of the sessions so far, once all have ended (or wait s)."""
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with self._lock:
                if all(s.closed is not None for s in self._sessions):
                    break
            time.sleep(0.02)
        with self._lock:
            return copy.deepcopy(self._sessions)

    def _accepted(self, conn):
        with self._lock:
            s = self._new_session(len(self._sessions) + 1)
            self._sessions.append(s)
            self._conns.add(conn)
        self._spawn(self._serve, conn, s)

    def _new_session(self, n):
        return self.SESSION(n)

    def _serve(self, conn, s):
        c = self.CONN(self, conn, s)
        try:
            c.run()
        except (Closed, OSError) as e:      # ssl.SSLError is an OSError
            self._conn_error(s, e)
        finally:
            with self._lock:
                s.closed = time.time()
                self._conns.discard(conn)
                self._conns.discard(c.sock)
                self._ended(s, c)
            c.finish()

    def _conn_error(self, s, e):
        """The session ended by e (Closed: either side closed it)."""

    def _ended(self, s, c):
        """The session is over (called with the lock held)."""

    def _fault_matches(self, f, name, *args):
        return f[self.FAULT_KEY] == name

    def _fault_for(self, s, name, *args):
        """The first fault for command or step name (and args, for
        _fault_matches) in session s (its count taken), or None."""
        with self._lock:
            for f in self._faults:
                if f['sessions'] is not None and s.n not in f['sessions']:
                    continue
                if f['left'] == 0 or not self._fault_matches(f, name, *args):
                    continue
                if f['left'] is not None:
                    f['left'] -= 1
                return f
        return None
