//! Letters produced: each typeset in its dispatch's layout and filed in the reports bucket
//! under the dispatch, by the recipient's record key.

use crate::s3::Documents;
use base64::Engine as _;
use domain::keys::RecipientKey;
use engine::ports::SendError;
use intake::template::{LetterLayout, RenderedLetter};
use std::collections::HashMap;
use std::sync::Mutex;

/// The letters crate's layout from the one frozen in the package.
pub fn layout_of(l: &LetterLayout) -> Result<letters::Layout, String> {
    let logo = match &l.logo {
        None => None,
        Some((name, data)) => {
            let kind = letters::LogoKind::from_name(name)
                .ok_or_else(|| format!("the logo '{name}' is not a .png, .jpg or .svg file"))?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(data)
                .map_err(|e| format!("the logo '{name}' is damaged in the package: {e}"))?;
            Some(letters::Logo { bytes, kind })
        }
    };
    Ok(letters::Layout {
        lang: letters::Lang::parse(&l.lang).unwrap_or_default(),
        sender: l.sender.clone(),
        return_address: l.return_address.clone(),
        letterhead: l.letterhead.clone(),
        logo,
        footer: l.footer.clone(),
        closing: l.closing.clone(),
        signature: l.signature.clone(),
    })
}

/// One recipient's letter: the address as validation printed it (a line each) and the
/// filled-in subject and text.
pub fn letter_of(address: &str, r: &RenderedLetter) -> letters::Letter {
    letters::Letter {
        address: address.lines().map(str::to_string).collect(),
        subject: r.subject.clone(),
        text: r.text.clone(),
        date: None,
        references: Vec::new(),
    }
}

/// Typesets on a blocking thread (a letter takes milliseconds of CPU, which must not hold
/// up the timers of the sends beside it).
pub async fn render(
    renderer: letters::Renderer,
    letter: letters::Letter,
) -> Result<letters::Rendered, letters::LetterError> {
    tokio::task::spawn_blocking(move || renderer.render(&letter))
        .await
        .unwrap_or_else(|e| Err(letters::LetterError::Typeset(e.to_string())))
}

/// Typesets letters one after another as one document (a print part), on a blocking thread.
pub async fn render_run(
    renderer: letters::Renderer,
    title: String,
    run: Vec<letters::Letter>,
) -> Result<letters::Rendered, letters::LetterError> {
    tokio::task::spawn_blocking(move || renderer.render_run(&title, &run))
        .await
        .unwrap_or_else(|e| Err(letters::LetterError::Typeset(e.to_string())))
}

/// The sender's letter press: a renderer per dispatch, kept for the process's life (a
/// dispatch's layout does not change after approval).
pub struct Press {
    docs: Documents,
    renderers: Mutex<HashMap<String, letters::Renderer>>,
}

impl Press {
    pub fn new(docs: Documents) -> Press {
        Press {
            docs,
            renderers: Mutex::new(HashMap::new()),
        }
    }

    fn renderer(
        &self,
        dispatch_id: &str,
        layout: &LetterLayout,
    ) -> Result<letters::Renderer, String> {
        let mut cache = self.renderers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = cache.get(dispatch_id) {
            return Ok(r.clone());
        }
        let r = letters::Renderer::new(layout_of(layout)?);
        cache.insert(dispatch_id.to_string(), r.clone());
        Ok(r)
    }
}

#[async_trait::async_trait]
impl engine::ports::LetterPress for Press {
    async fn produce(
        &self,
        dispatch_id: &str,
        recipient: &RecipientKey,
        address: &str,
        layout: &LetterLayout,
        letter: &RenderedLetter,
    ) -> Result<String, SendError> {
        let pdf = self.typeset(dispatch_id, address, layout, letter).await?;
        let key = documents::keys::letter(dispatch_id, &recipient.sk);
        // Filing again replaces the same letter: a failed or unanswered write is tried again.
        self.docs
            .put_report_document(&key, pdf, "application/pdf")
            .await
            .map_err(|e| SendError::Transient(e.to_string()))?;
        Ok(key)
    }

    async fn typeset(
        &self,
        dispatch_id: &str,
        address: &str,
        layout: &LetterLayout,
        letter: &RenderedLetter,
    ) -> Result<Vec<u8>, SendError> {
        let refused = |message: String| SendError::Permanent {
            code: "render_failed".into(),
            message,
        };
        let renderer = self.renderer(dispatch_id, layout).map_err(refused)?;
        Ok(render(renderer, letter_of(address, letter))
            .await
            .map_err(|e| refused(e.to_string()))?
            .pdf)
    }
}
