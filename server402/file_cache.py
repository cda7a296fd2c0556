"""The cache of the embedded default (no Redis): Django's file cache, culled by expiry before chance.

Django's file cache, once MAX_ENTRIES files exist, deletes a random third of
them: live rate-limit windows, statistics and the sandbox's async jobs went
with the upstream nonces that filled it. This one first deletes the entries
that have expired (nonces expire after 15 minutes), and culls at random only
when the live entries alone fill it.
"""

from django.core.cache.backends.filebased import FileBasedCache


class FileCache(FileBasedCache):
    def _cull(self):
        names = self._list_cache_files()
        if len(names) < self._max_entries:
            return
        for name in names:
            try:
                with open(name, "rb") as file:
                    self._is_expired(file)
            except FileNotFoundError:  # another process culled it first
                continue
        super()._cull()
