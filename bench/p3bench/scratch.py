"""Where the bench keeps its files: a root directory holding
  src/   the POP3 sources' mail (tmpfs: the "remote" provider's disk is not
         ours, and its reads must not compete with the writes we measure);
  dst/   every destination -- Maildirs, the IMAP store, state dirs -- on a
         freshly made ext4 on a loop device backed by a sparse file on the
         machine's disk (so fsync reaches the real disk).

Why a fresh file system: on this machine's aged root ext4, creating a file
costs 0.1 to 1.7 ms of CPU depending on which directory it is created in
(inode allocation searching its block group), so two tools writing the
same 10,000 files into two fresh directories differed by up to 10x for
that reason alone. A new ext4 gives every tool the same allocator.

    s = Scratch(root, dst_gb=16, src_gb=6).setup()
    s.src, s.dst, s.kind ("loop+tmpfs" or "plain dirs: <why>"); s.teardown()

Without root (or when mount fails) both are plain directories under root,
and s.kind says so: the figures are then only comparable within a run."""

import os
import shutil
import subprocess



class Scratch:
    def __init__(self, root, dst_gb=16, src_gb=6):
        self.root = root
        self.src = os.path.join(root, 'src')
        self.dst = os.path.join(root, 'dst')
        self.image = os.path.join(root, 'dst.img')
        self.dst_gb, self.src_gb = dst_gb, src_gb
        self.mounted = []
        self.kind = None

    def setup(self):
        os.makedirs(self.src, exist_ok=True)
        os.makedirs(self.dst, exist_ok=True)
        why = self._mount()
        if why:
            self.kind = 'plain dirs (%s)' % why
        else:
            self.kind = 'dst: fresh ext4 on loop (%d GB sparse), src: tmpfs' % self.dst_gb
        for d in (self.root, self.src, self.dst):
            os.chmod(d, 0o755)
        return self

    def _mount(self):
        if os.geteuid() != 0:
            return 'not root: no loop device or tmpfs'
        mkfs = shutil.which('mkfs.ext4') or '/usr/sbin/mkfs.ext4'
        try:
            with open(self.image, 'wb') as f:
                f.truncate(self.dst_gb << 30)
            # the inode tables are written now, not lazily by a kernel
            # thread while the tools run
            r = subprocess.run([mkfs, '-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0',
                                self.image], capture_output=True, text=True)
            if r.returncode != 0:
                return 'mkfs.ext4: %s' % r.stderr.strip()
            r = subprocess.run(['mount', '-o', 'loop', self.image, self.dst],
                               capture_output=True, text=True)
            if r.returncode != 0:
                return 'mount -o loop: %s' % r.stderr.strip()
            self.mounted.append(self.dst)
            r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=%dg,mode=0755' % self.src_gb,
                                'tmpfs', self.src], capture_output=True, text=True)
            if r.returncode != 0:
                return 'mount tmpfs: %s' % r.stderr.strip()
            self.mounted.append(self.src)
        except OSError as e:
            return str(e)
        return None

    def teardown(self):
        for m in reversed(self.mounted):
            # lazy: a process we failed to stop must not keep the loop
            # device (mount -o loop detaches it when the last user goes)
            subprocess.run(['umount', '-l', m], capture_output=True)
        self.mounted = []
        try:
            os.unlink(self.image)
        except OSError:
            pass
