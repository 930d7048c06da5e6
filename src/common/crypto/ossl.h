// Internal to wrenn_crypto: RAII owners for OpenSSL objects and the conversion of
// OpenSSL's per-thread error queue into wrenn::Error. Not part of the public API.
//
// Contract: every function in wrenn_crypto that calls OpenSSL leaves the calling thread's
// error queue empty when it returns or throws, so unrelated code (Asio's SSL streams read
// the same queue) never sees stale errors.
#pragma once

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <memory>
#include <string>
#include <string_view>

#include "error.h"

namespace wrenn::crypto::detail {

template <auto Fn>
struct Deleter {
  template <typename T>
  void operator()(T* p) const {
    Fn(p);
  }
};

using BioPtr = std::unique_ptr<BIO, Deleter<BIO_free_all>>;
using BnPtr = std::unique_ptr<BIGNUM, Deleter<BN_free>>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, Deleter<EVP_PKEY_free>>;
using CipherCtxPtr = std::unique_ptr<EVP_CIPHER_CTX, Deleter<EVP_CIPHER_CTX_free>>;
using X509Ptr = std::unique_ptr<X509, Deleter<X509_free>>;
using X509NamePtr = std::unique_ptr<X509_NAME, Deleter<X509_NAME_free>>;
using X509ExtPtr = std::unique_ptr<X509_EXTENSION, Deleter<X509_EXTENSION_free>>;
using X509StorePtr = std::unique_ptr<X509_STORE, Deleter<X509_STORE_free>>;
using X509StoreCtxPtr = std::unique_ptr<X509_STORE_CTX, Deleter<X509_STORE_CTX_free>>;
using Asn1IntPtr = std::unique_ptr<ASN1_INTEGER, Deleter<ASN1_INTEGER_free>>;
using Asn1OctetPtr = std::unique_ptr<ASN1_OCTET_STRING, Deleter<ASN1_OCTET_STRING_free>>;
using GeneralNamePtr = std::unique_ptr<GENERAL_NAME, Deleter<GENERAL_NAME_free>>;
using GeneralNamesPtr = std::unique_ptr<GENERAL_NAMES, Deleter<GENERAL_NAMES_free>>;

// Drains the calling thread's OpenSSL error queue into one string ("" when empty).
std::string drain_errors();

// Error(code, "<context>: <drained OpenSSL errors>"); the queue is empty afterwards.
Error openssl_error(Code code, std::string_view context);

// Throws openssl_error(kInternal, context) unless ok.
inline void check(bool ok, std::string_view context) {
  if (!ok) throw openssl_error(Code::kInternal, context);
}

// A read-only memory BIO over `data` (which must outlive it).
BioPtr mem_bio(std::string_view data);
// Everything written so far to a memory BIO.
std::string bio_contents(BIO* bio);

}  // namespace wrenn::crypto::detail
