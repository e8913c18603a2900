/* common/object.h: --object, qemu's user-creatable objects (object.c).
 * Of qemu's object types the tool creates `secret` (a password or key
 * given inline, from a file, raw or base64) so that options can name it
 * later; every other type is refused with qemu's message.
 * SPDX-License-Identifier: MIT
 */
#ifndef FQ_TOOLS_OBJECT_H
#define FQ_TOOLS_OBJECT_H

#include <stddef.h>

/* Create the object `spec` describes ("secret,id=sec0,data=..." or its
 * JSON form). Returns 0; 1 after printing the help `spec` asked for
 * ("help", "secret,help": the caller exits 0); -1 after printing an error
 * (the caller exits 1). */
int tool_object_add(const char *spec);
/* The bytes of secret `id` (*len set), or NULL if there is none. */
const char *tool_secret(const char *id, size_t *len);
/* The passphrase of encrypted images opened without encrypt.key-secret:
 * $FASTQCOW_SECRET, or the content of the file $FASTQCOW_SECRET_FILE
 * names (*len set); NULL if neither is set (or the file is unreadable,
 * said once). */
const char *tool_default_secret(size_t *len);
/* The secret an option names (encrypt.key-secret=ID), or NULL after
 * putting qemu's message ("No secret with id 'ID'") into err. */
const char *tool_secret_or_err(const char *id, size_t *len, char *err, size_t errlen);

#endif
