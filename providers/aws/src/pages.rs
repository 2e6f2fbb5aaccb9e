//! Lists read whole. API Gateway answers a list one page at a time (25 items unless asked for
//! more, and never more than it wants to), with a token for the next page: `position` for
//! REST APIs, `NextToken` for HTTP APIs. A resource on a later page is as real as one on the
//! first: missing it would make a plan create it again.

use std::future::Future;

use tollbridge_provider::ProviderError;

/// Items asked for per page, REST APIs (the most API Gateway gives; it may give fewer).
pub const REST_PAGE: i32 = 500;
/// Items asked for per page, HTTP APIs.
pub const HTTP_PAGE: &str = "500";
/// Pages one list may take before the answers are taken for a service that never ends it.
const MAX_PAGES: usize = 1000;

/// Every item of the list `operation`. `page(token)` reads the page at `token` (`None`: the
/// first) and returns its items and the next page's token, absent or empty after the last.
pub async fn all<T, F, Fut>(operation: &str, mut page: F) -> Result<Vec<T>, ProviderError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<(Vec<T>, Option<String>), ProviderError>>,
{
    let mut items = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let (mut more, next) = page(token.clone()).await?;
        items.append(&mut more);
        match next.filter(|t| !t.is_empty()) {
            None => return Ok(items),
            // Asking again would get the same page again: the listing cannot be trusted.
            Some(next) if token.as_ref() == Some(&next) => {
                return Err(ProviderError::Transient(format!("{operation}: the same page token came back")))
            }
            Some(next) => token = Some(next),
        }
    }
    Err(ProviderError::Transient(format!("{operation}: more than {MAX_PAGES} pages")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pages of `list`, `size` items each, tokens `at-N`; records the tokens asked for.
    async fn pages_of(
        list: &[u32],
        size: usize,
        asked: &mut Vec<Option<String>>,
    ) -> Result<Vec<u32>, ProviderError> {
        all("ListThings", |token: Option<String>| {
            asked.push(token.clone());
            let start =
                token.map_or(0, |t| t.trim_start_matches("at-").parse::<usize>().expect("a token we gave"));
            let end = (start + size).min(list.len());
            let next = (end < list.len()).then(|| format!("at-{end}"));
            std::future::ready(Ok((list[start..end].to_vec(), next)))
        })
        .await
    }

    #[tokio::test]
    async fn follows_tokens_to_the_last_page() {
        let list: Vec<u32> = (0..60).collect();
        let mut asked = Vec::new();
        assert_eq!(pages_of(&list, 25, &mut asked).await.expect("listed"), list);
        assert_eq!(asked, [None, Some("at-25".into()), Some("at-50".into())]);
        let mut asked = Vec::new();
        assert_eq!(pages_of(&[], 25, &mut asked).await.expect("listed"), Vec::<u32>::new());
        assert_eq!(asked, [None]);
    }

    #[tokio::test]
    async fn an_empty_token_ends_the_list() {
        let listed = all("ListThings", |_| std::future::ready(Ok((vec![1], Some(String::new()))))).await;
        assert_eq!(listed.expect("listed"), [1]);
    }

    #[tokio::test]
    async fn a_repeated_token_or_an_endless_list_is_an_error_not_a_short_list() {
        let repeated =
            all("ListThings", |_| std::future::ready(Ok((vec![1], Some("again".to_string()))))).await;
        assert!(matches!(repeated, Err(ProviderError::Transient(m)) if m.contains("same page token")));
        let mut n = 0;
        let endless = all("ListThings", |_| {
            n += 1;
            std::future::ready(Ok((Vec::<u32>::new(), Some(format!("t{n}")))))
        })
        .await;
        assert!(matches!(endless, Err(ProviderError::Transient(m)) if m.contains("more than 1000 pages")));
        assert_eq!(n, MAX_PAGES);
    }

    #[tokio::test]
    async fn a_failed_page_fails_the_list() {
        let failed: Result<Vec<u32>, _> = all("ListThings", |token: Option<String>| {
            std::future::ready(match token {
                None => Ok((vec![1], Some("next".to_string()))),
                Some(_) => Err(ProviderError::Transient("ListThings: throttled".into())),
            })
        })
        .await;
        assert!(matches!(failed, Err(ProviderError::Transient(_))));
    }
}
