/* tests/tools/opendkim_check.c — OpenDKIM's library (Debian libopendkim) as an independent DKIM
 * implementation for the interop tests: it verifies what relais-auth signs and signs what
 * relais-auth verifies. (opendkim-testmsg, the tool built on the same library, fails on every
 * input in Debian 12's 2.11.0~beta2 with "dkim_chunk(): Syntax error", so the tests call the
 * library directly.) Keys come from a file, never DNS.
 *
 *   opendkim_check verify KEYS < MESSAGE     KEYS: lines "SELECTOR._domainkey.DOMAIN RECORD"
 *       prints one line per signature: "pass d=DOMAIN s=SELECTOR" or "fail ... ERROR"
 *   opendkim_check sign DOMAIN SELECTOR KEY.pem rsa-sha256|ed25519-sha256 simple|relaxed
 *                       simple|relaxed < MESSAGE
 *       writes the message with OpenDKIM's DKIM-Signature on top
 * MESSAGE is CRLF text. Exit 0 when it produced its output, 1 on a library error, 2 on usage.
 */
#include <opendkim/dkim.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static unsigned char message[4 << 20];

static size_t ReadAll(FILE* in, unsigned char* buf, size_t max) {
  size_t len = 0, n;
  while (len < max && (n = fread(buf + len, 1, max - len, in)) > 0) {
    len += n;
  }
  return len;
}

static int Fail(const char* what, DKIM_STAT st) {
  fprintf(stderr, "opendkim_check: %s: %s\n", what, dkim_getresultstr(st));
  return 1;
}

static int Feed(DKIM* dkim, size_t len) {
  DKIM_STAT st = dkim_chunk(dkim, message, len);
  if (st != DKIM_STAT_OK) {
    return Fail("dkim_chunk", st);
  }
  st = dkim_chunk(dkim, NULL, 0);
  if (st != DKIM_STAT_OK) {
    return Fail("dkim_chunk", st);
  }
  st = dkim_eom(dkim, NULL);
  /* Verification reports bad signatures per signature below, not here. */
  if (st != DKIM_STAT_OK && st != DKIM_STAT_BADSIG && st != DKIM_STAT_NOSIG &&
      st != DKIM_STAT_CANTVRFY && st != DKIM_STAT_NOKEY) {
    return Fail("dkim_eom", st);
  }
  return 0;
}

static int Verify(DKIM_LIB* lib, const char* keys) {
  dkim_query_t method = DKIM_QUERY_FILE;
  dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_QUERYMETHOD, &method, sizeof method);
  dkim_options(lib, DKIM_OP_SETOPT, DKIM_OPTS_QUERYINFO, (void*)keys, strlen(keys));
  DKIM_STAT st;
  DKIM* dkim = dkim_verify(lib, (const unsigned char*)"relais", NULL, &st);
  if (dkim == NULL) {
    return Fail("dkim_verify", st);
  }
  const size_t len = ReadAll(stdin, message, sizeof message);
  if (Feed(dkim, len) != 0) {
    return 1;
  }
  DKIM_SIGINFO** sigs = NULL;
  int n = 0;
  dkim_getsiglist(dkim, &sigs, &n);
  if (n == 0) {
    printf("none\n");
  }
  for (int i = 0; i < n; ++i) {
    const int pass = DKIM_SIG_CHECK(sigs[i]);
    printf("%s d=%s s=%s", pass ? "pass" : "fail", dkim_sig_getdomain(sigs[i]),
           dkim_sig_getselector(sigs[i]));
    if (!pass) {
      printf(" %s%s", dkim_sig_geterrorstr(dkim_sig_geterror(sigs[i])),
             dkim_sig_getbh(sigs[i]) == DKIM_SIGBH_MISMATCH ? " (body hash mismatch)" : "");
    }
    printf("\n");
  }
  dkim_free(dkim);
  return 0;
}

static int Sign(DKIM_LIB* lib, char** argv) {
  FILE* f = fopen(argv[4], "rb");
  if (f == NULL) {
    perror(argv[4]);
    return 2;
  }
  static unsigned char key[65536];
  const size_t key_len = ReadAll(f, key, sizeof key - 1);
  fclose(f);
  key[key_len] = '\0';
  const dkim_alg_t alg =
      strcmp(argv[5], "ed25519-sha256") == 0 ? DKIM_SIGN_ED25519SHA256 : DKIM_SIGN_RSASHA256;
  const dkim_canon_t hc = strcmp(argv[6], "relaxed") == 0 ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE;
  const dkim_canon_t bc = strcmp(argv[7], "relaxed") == 0 ? DKIM_CANON_RELAXED : DKIM_CANON_SIMPLE;
  DKIM_STAT st;
  DKIM* dkim =
      dkim_sign(lib, (const unsigned char*)"relais", NULL, key, (const unsigned char*)argv[3],
                (const unsigned char*)argv[2], hc, bc, alg, -1, &st);
  if (dkim == NULL) {
    return Fail("dkim_sign", st);
  }
  const size_t len = ReadAll(stdin, message, sizeof message);
  if (Feed(dkim, len) != 0) {
    return 1;
  }
  unsigned char* header = NULL;
  size_t header_len = 0;
  st = dkim_getsighdr_d(dkim, strlen(DKIM_SIGNHEADER) + 2, &header, &header_len);
  if (st != DKIM_STAT_OK) {
    return Fail("dkim_getsighdr_d", st);
  }
  printf("%s: %s\r\n", DKIM_SIGNHEADER, header);
  fwrite(message, 1, len, stdout);
  dkim_free(dkim);
  return 0;
}

int main(int argc, char** argv) {
  DKIM_LIB* lib = dkim_init(NULL, NULL);
  if (lib == NULL) {
    fprintf(stderr, "opendkim_check: dkim_init failed\n");
    return 1;
  }
  int status = 2;
  if (argc == 3 && strcmp(argv[1], "verify") == 0) {
    status = Verify(lib, argv[2]);
  } else if (argc == 8 && strcmp(argv[1], "sign") == 0) {
    status = Sign(lib, argv);
  } else {
    fprintf(stderr,
            "usage: opendkim_check verify KEYS < MESSAGE\n"
            "       opendkim_check sign DOMAIN SELECTOR KEY.pem ALGORITHM HCANON BCANON"
            " < MESSAGE\n");
  }
  dkim_close(lib);
  return status;
}
