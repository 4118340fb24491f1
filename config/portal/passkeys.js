// Portcullis passkeys: the portal's only script. It calls navigator.credentials (WebAuthn)
// and hands the answer to a server-rendered form, which the portal checks like any other.
// Every page works without it; only the passkey controls (hidden until this runs) need it.
(function () {
  "use strict";
  if (!window.PublicKeyCredential || !navigator.credentials) {
    return;
  }

  function toBytes(base64url) {
    var base64 = base64url.replace(/-/g, "+").replace(/_/g, "/");
    var binary = atob(base64 + "===".slice((base64.length + 3) % 4));
    var bytes = new Uint8Array(binary.length);
    for (var i = 0; i < binary.length; i++) {
      bytes[i] = binary.charCodeAt(i);
    }
    return bytes.buffer;
  }

  function toBase64url(buffer) {
    var bytes = new Uint8Array(buffer);
    var binary = "";
    for (var i = 0; i < bytes.length; i++) {
      binary += String.fromCharCode(bytes[i]);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function descriptors(list) {
    return (list || []).map(function (d) {
      return Object.assign({}, d, { id: toBytes(d.id) });
    });
  }

  // The server's JSON options (WebAuthn JSON shapes) as the API takes them.
  function creationOptions(publicKey) {
    var o = Object.assign({}, publicKey);
    o.challenge = toBytes(o.challenge);
    o.user = Object.assign({}, o.user, { id: toBytes(o.user.id) });
    o.excludeCredentials = descriptors(o.excludeCredentials);
    return o;
  }

  function requestOptions(publicKey) {
    var o = Object.assign({}, publicKey);
    o.challenge = toBytes(o.challenge);
    o.allowCredentials = descriptors(o.allowCredentials);
    return o;
  }

  // The credential as JSON, binary members base64url (PublicKeyCredential.toJSON()).
  function credentialJSON(credential) {
    var r = credential.response;
    var response = { clientDataJSON: toBase64url(r.clientDataJSON) };
    if (r.attestationObject) {
      response.attestationObject = toBase64url(r.attestationObject);
      response.transports = r.getTransports ? r.getTransports() : [];
    } else {
      response.authenticatorData = toBase64url(r.authenticatorData);
      response.signature = toBase64url(r.signature);
      response.userHandle = r.userHandle ? toBase64url(r.userHandle) : null;
    }
    return JSON.stringify({
      id: credential.id,
      rawId: toBase64url(credential.rawId),
      type: credential.type,
      response: response,
      clientExtensionResults: credential.getClientExtensionResults
        ? credential.getClientExtensionResults()
        : {}
    });
  }

  function say(form, key) {
    var status = form.querySelector("[data-passkey-status]");
    if (status) {
      status.textContent = status.getAttribute(key) || "";
    }
  }

  function submitWith(form, fields) {
    Object.keys(fields).forEach(function (name) {
      form.querySelector("input[name='" + name + "']").value = fields[name];
    });
    form.submit();
  }

  function fetchOptions(url) {
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
      credentials: "omit"
    }).then(function (r) {
      if (!r.ok) {
        throw new Error("options " + r.status);
      }
      return r.json();
    }).then(function (body) {
      return body.data;
    });
  }

  var conditional = null;

  function signIn(form, mediation) {
    var abort = new AbortController();
    return fetchOptions(form.getAttribute("data-options-url")).then(function (data) {
      var request = { publicKey: requestOptions(data.options.publicKey), signal: abort.signal };
      if (mediation) {
        request.mediation = mediation;
        conditional = abort;
      }
      return navigator.credentials.get(request).then(function (credential) {
        submitWith(form, { ceremony_id: data.ceremony_id, credential: credentialJSON(credential) });
      });
    });
  }

  // Choices that lead to a passkey ceremony (the invitation's "Use a passkey instead"):
  // offered only where one can run.
  document.querySelectorAll("[data-passkey-reveal]").forEach(function (element) {
    element.hidden = false;
  });
  document.querySelectorAll("[data-passkey]").forEach(function (form) {
    form.hidden = false;
    var kind = form.getAttribute("data-passkey");
    var button = form.querySelector("[data-passkey-start]");
    button.addEventListener("click", function () {
      say(form, "data-working");
      var done;
      if (kind === "register") {
        var created = JSON.parse(form.getAttribute("data-options"));
        done = navigator.credentials
          .create({ publicKey: creationOptions(created.publicKey) })
          .then(function (credential) {
            submitWith(form, { credential: credentialJSON(credential) });
          });
      } else if (kind === "second-factor") {
        var requested = JSON.parse(form.getAttribute("data-options"));
        done = navigator.credentials
          .get({ publicKey: requestOptions(requested.publicKey) })
          .then(function (credential) {
            submitWith(form, { passkey_credential: credentialJSON(credential) });
          });
      } else {
        if (conditional) {
          conditional.abort();
          conditional = null;
        }
        done = signIn(form, null);
      }
      done.catch(function () {
        say(form, "data-failed");
      });
    });
    // Autofill: offer passkeys in the email field's suggestions where the browser can.
    if (kind === "sign-in" && PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then(function (available) {
        if (available) {
          signIn(form, "conditional").catch(function () {});
        }
      });
    }
  });
})();
